"""Kernel log parsers: oops family, kmemleak, dma-debug."""
