"""Parsers: trace.dat v6/v7, ftrace text, kernel logs (oops, kmemleak, dma-debug) into Arrow record batches."""
