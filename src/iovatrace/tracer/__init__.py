"""Tracer: the only code that touches tracefs, kprobe_events or trace-cmd; and the QEMU lab."""
