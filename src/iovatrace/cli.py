"""Command-line interface: a thin click layer.

Each command parses its options, calls one library function, renders the result and maps errors:
an :class:`~iovatrace.errors.IovatraceError` becomes one line on stderr and exit status 2 for unusable input
(:class:`~iovatrace.errors.InputError`), 1 otherwise; usage errors are one line too (status 2); ``--debug`` shows
the traceback. Library modules are imported inside the commands so that ``iovatrace info`` starts fast.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .errors import InputError, IovatraceError

F = TypeVar("F", bound=Callable[..., Any])


def sample_trace_path() -> str:
    """Path of the lab trace bundled with the package (used when ``replay`` gets no argument)."""
    from importlib.resources import files

    return str(files("iovatrace") / "data" / "sample_lazy_6.1.dat")


class _OneLineErrors:
    """Mixin for click commands: IovatraceError and usage errors become one line on stderr.

    Unusable input (:class:`~iovatrace.errors.InputError`) and bad usage exit with status 2, other errors with 1
    (an error class may set its own ``exit_code``).
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except IovatraceError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            click.echo(f"iovatrace: error: {exc}", err=True)
            ctx.exit(getattr(exc, "exit_code", 2 if isinstance(exc, InputError) else 1))

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        """Run the CLI; a usage error (missing file, bad option) is one line and exit status 2."""
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except click.UsageError as exc:
            cmd = exc.ctx.command_path if exc.ctx is not None else "iovatrace"
            click.echo(f"{cmd}: error: {exc.format_message()} (see '{cmd} --help')", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


class _Group(_OneLineErrors, click.Group):
    """The ``iovatrace`` group."""


class _Command(_OneLineErrors, click.Command):
    """A command run on its own (the ``replay`` console script)."""


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show Python tracebacks for errors.")
@click.version_option(package_name="iovatrace")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """iovatrace: what the Linux IOMMU DMA layer actually did.

    Parse ftrace (trace.dat v6/v7, text) and kernel logs (oops, kmemleak, dma-debug) into Arrow, replay the
    events against a model of the IOVA allocator, rcache, flush queues and IOMMU domains, and report leaks,
    outstanding mappings and broken invariants.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


# ---------------------------------------------------------------------------------------------------------------
# Trace files (parsers/): info, convert
# ---------------------------------------------------------------------------------------------------------------


_FORMATS_HELP = ("Event formats for an ftrace text TRACE: a trace.dat of the same run, a tracefs events directory "
                 "or a concatenated format file (default: a trace.dat beside TRACE, if any).")


def _formats_option(fn: F) -> F:
    return click.option("--formats", "formats", type=click.Path(exists=True), help=_FORMATS_HELP)(fn)


@cli.command(short_help="Describe a trace: format, CPUs, clock, event counts, losses.")
@click.argument("trace", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_formats_option
def info(trace: str, as_json: bool, formats: str | None) -> None:
    """Describe TRACE (trace.dat or ftrace text): format version, compression, CPUs, clock, events and losses."""
    from .parsers.commands import run_info
    from .parsers.text_source import text_formats

    with text_formats(trace, formats):
        run_info(trace, as_json=as_json)


@cli.command(short_help="Convert a trace into Parquet/Arrow tables, one per event type.")
@click.argument("trace", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--events", "events", multiple=True, help="Only events matching this glob (system:name); repeatable.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "arrow"]), default="parquet", show_default=True,
              help="Parquet files, or Arrow IPC files.")
@_formats_option
def convert(trace: str, out_dir: str, events: tuple[str, ...], fmt: str, formats: str | None) -> None:
    """Convert TRACE into one typed table per event type: DIR/<system>/<name>.parquet (or .arrow)."""
    from .parsers.commands import run_convert
    from .parsers.text_source import text_formats

    with text_formats(trace, formats):
        run_convert(trace, out_dir, events=list(events), fmt=fmt)


# ---------------------------------------------------------------------------------------------------------------
# Replay (replay/): replay, whatif
# ---------------------------------------------------------------------------------------------------------------


def _replay_command(fn: F) -> F:
    # click lists options in the reverse order of application: the list below reads bottom-up as --help shows it
    fn = click.option("--fail-on-findings", is_flag=True, help="Exit with status 3 when there are error findings.")(fn)
    fn = click.option("--mapping", type=click.Path(exists=True, dir_okay=False),
                      help="Probe-name mapping file (for traces whose kprobes have other names).")(fn)
    fn = _formats_option(fn)
    fn = click.option("--report", "report_dir", type=click.Path(file_okay=False),
                      help="Write an HTML report with every chart (PNG and SVG) into this directory.")(fn)
    fn = click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False),
                      help="Write the findings, domains and state timeline as Parquet into this directory.")(fn)
    fn = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")(fn)
    fn = click.option("--at", "at", metavar="TIME",
                      help="Print a state snapshot at this trace time (seconds, or ns with 'ns').")(fn)
    fn = click.option("--bug-mode", "bug_modes", multiple=True, metavar="MODE",
                      help="Enable a seed bug mode (a..e); repeatable.")(fn)
    fn = click.option("--kernel", metavar="VERSION",
                      help="Kernel version profile (e.g. 6.1, 6.12, 5.15); default: detected.")(fn)
    fn = click.argument("trace", required=False, type=click.Path(exists=True, dir_okay=False))(fn)
    return fn


@cli.command("replay", short_help="Replay a trace against the IOVA allocator and IOMMU model.")
@_replay_command
def replay_cmd(**kwargs: Any) -> None:
    """Replay TRACE (trace.dat or ftrace text; default: the bundled sample) against the IOVA/rcache/IOMMU model."""
    from .parsers.text_source import text_formats
    from .replay.commands import run_replay

    if not kwargs.get("trace"):
        kwargs["trace"] = sample_trace_path()
    with text_formats(kwargs["trace"], kwargs.pop("formats", None)):
        run_replay(**kwargs)


@cli.command(short_help="Replay a trace under other flush policies and kernels.")
@click.argument("trace", type=click.Path(exists=True, dir_okay=False))
@click.option("--policy", "policies", multiple=True,
              help="strict | lazy | lazy:SIZE/TIMEOUT_MS | single | single:SIZE/TIMEOUT_MS | rollover; repeatable.")
@click.option("--kernel", "kernels", multiple=True, help="Kernel profile(s) to compare; repeatable.")
@click.option("--flush-cost-us", type=float, default=None,
              help="Cost of one global IOTLB flush (flush-queue flush) in microseconds; default 5800, the s390 "
                   "model (1 us per DMA operation and per strict invalidation).")
@click.option("--time-scale", type=float, default=1.0, show_default=True,
              help="Multiply the trace's time gaps (0.01 = the same operations from a 100x faster device).")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), help="Write tables and charts here.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def whatif(trace: str, policies: tuple[str, ...], kernels: tuple[str, ...], flush_cost_us: float | None,
           time_scale: float, out_dir: str | None, as_json: bool) -> None:
    """Replay TRACE under other flush policies and kernel profiles, side by side.

    For each policy: IOTLB invalidations (count, per second, batching), IOVA pages in use, magazine and depot
    memory, rcache hit rate, allocation failures, rcache flushes, the exposure window (unmap to invalidation) and
    an estimated throughput relative to rollover from a serialised cost model (see iovatrace.replay.whatif).
    """
    from .replay.whatif_cli import run_whatif

    run_whatif(trace, policies=list(policies), kernels=list(kernels), flush_cost_us=flush_cost_us,
               out_dir=out_dir, as_json=as_json, time_scale=time_scale)


# ---------------------------------------------------------------------------------------------------------------
# Kernel logs (parsers/): oops, kmemleak; leak diagnosis: leaks
# ---------------------------------------------------------------------------------------------------------------


@cli.command(short_help="Find and title crash reports in a kernel log.")
@click.argument("log", type=click.Path(exists=True, allow_dash=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of reports.")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), help="Write the tables as Parquet.")
def oops(log: str, as_json: bool, out_dir: str | None) -> None:
    """Find crash reports (oops, BUG, WARNING, KASAN, lockups, ...) in LOG and title them ('-' = stdin)."""
    from .parsers.logs_cli import run_oops

    run_oops(log, as_json=as_json, out_dir=out_dir)


@cli.command(short_help="List the kmemleak objects of a kernel log.")
@click.argument("log", type=click.Path(exists=True, allow_dash=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of objects.")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), help="Write the tables as Parquet.")
def kmemleak(log: str, as_json: bool, out_dir: str | None) -> None:
    """List the kmemleak objects reported in LOG ('-' = stdin), one line each.

    Reads every kmemleak print format (2.6.31 to 6.13+, dmesg with 'kmemleak:' prefixes, debugfs, mail copies).
    A damaged record (e.g. a truncated hex dump) or a log without records exits with status 2.
    """
    from .parsers.kmemleak_cli import run_kmemleak

    run_kmemleak(log, as_json=as_json, out_dir=out_dir)


@cli.command(short_help="Diagnose kmemleak / dma-debug leak reports (chains, verdicts).")
@click.argument("report", type=click.Path(exists=True, allow_dash=True, dir_okay=False))
@click.option("--kernel", help="Kernel version the report came from (decides magazine layout).")
@click.option("--trace", type=click.Path(exists=True, dir_okay=False), help="A trace of the same run to correlate.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), help="Write the tables as Parquet.")
def leaks(report: str, kernel: str | None, trace: str | None, as_json: bool, out_dir: str | None) -> None:
    """Diagnose kmemleak / dma-debug leak reports: chains of magazines, struct iova ranges, verdicts.

    Classifies each kmemleak object (iova_magazine, struct iova, rcache array, other), decodes its hex dump for the
    kernel's layout (inferred from the report unless --kernel is given), links objects into chains through pointer
    words and gives each chain a verdict with its reasons and evidence lines. --trace replays a trace of the same
    run and says where the replay holds each reported magazine and pfn, and sets dma-debug's pending counts beside
    the replay's outstanding mappings. Unusable input exits with status 2.
    """
    from .analysis.leaks_cli import run_leaks

    run_leaks(report, kernel=kernel, trace=trace, as_json=as_json, out_dir=out_dir)


# ---------------------------------------------------------------------------------------------------------------
# Recording (tracer/): probes, record, lab
# ---------------------------------------------------------------------------------------------------------------
# Commands registered by iovatrace.tracer.cli_commands (kept there so option lists stay next to their code).


# ---------------------------------------------------------------------------------------------------------------
# Charts (analysis/): chart
# ---------------------------------------------------------------------------------------------------------------


@cli.command(short_help="Write every chart of a trace and an HTML index.")
@click.argument("trace", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output directory (created).")
@click.option("--kernel", help="Kernel version profile for the replay; default: detected.")
@_formats_option
def chart(trace: str, out_dir: str, kernel: str | None, formats: str | None) -> None:
    """Write every chart TRACE supports (PNG and SVG) and an index.html with the replay summary."""
    from .analysis.report import run_chart
    from .parsers.text_source import text_formats

    with text_formats(trace, formats):
        run_chart(trace, out_dir, kernel=kernel)


def _register_tracer() -> None:
    try:
        from .tracer.cli_commands import register
    except ImportError:  # the tracer commands are optional until that package lands
        return
    register(cli)


_register_tracer()


def main() -> None:
    """Entry point of the ``iovatrace`` console script."""
    cli(prog_name="iovatrace")


def replay_main() -> None:
    """Entry point of the ``replay`` console script: ``iovatrace replay`` on its own."""
    alone = _Command("replay", params=replay_cmd.params, callback=replay_cmd.callback, help=replay_cmd.help,
                     context_settings={"help_option_names": ["-h", "--help"]})
    alone.main(prog_name="replay")
