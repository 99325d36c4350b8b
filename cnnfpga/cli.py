"""The `cnnfpga` command: one entry point, a subcommand per job (`cnnfpga COMMAND --help` for each).

Each subcommand lives in its own module with `add_arguments(parser)` and `run(args) -> exit status`;
`python -m cnnfpga.classify` and `python -m cnnfpga.design` run the same code as `cnnfpga classify` and
`cnnfpga design`. Exit status: 0 done, 1 done with failures (e.g. unreadable images), 2 bad input.
"""
import argparse
import importlib
import logging
import math
import os
import sys
import warnings

from .errors import CnnfpgaError

# subcommand -> (module relative to this package, one-line summary); a module is imported only when its
# subcommand runs (the design tool's imports alone take a second)
COMMANDS = {"classify": (".classify", "classify images (files, folders, globs) in batches"),
            "info": (".info", "a net's layers, shapes, MACs, parameters and where each runs"),
            "design": (".design.__main__", "size an FPGA design for a board and write its report and source"),
            "quantize": (".quantize", "choose per-layer fixed-point precision within an accuracy budget"),
            "bench": (".bench", "images/s of the backends, side by side with OpenCV")}
log = logging.getLogger("cnnfpga")


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text}")
    return value


def finite_float(text: str) -> float:
    """An argparse type: a number that is neither infinite nor NaN."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error: the usage block it prints by default buries what was wrong."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def run_command(run, args) -> int:
    """Run a subcommand with our progress lines and warnings on stderr, one line each; a CnnfpgaError is
    one line and exit code 2."""
    progress = logging.StreamHandler(sys.stderr)   # our progress lines only, not other libraries' logs
    progress.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(progress)
    level = log.level
    log.setLevel(logging.INFO)
    try:
        with warnings.catch_warnings():   # the library's warnings (fillers, uncalibrated fixed point): one line each
            warnings.simplefilter("default", UserWarning)
            warnings.showwarning = lambda message, *_: print(f"warning: {message}", file=sys.stderr)
            return run(args)
    except CnnfpgaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:   # stdout closed early (`| head`): not an error of ours, and nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:   # main() may be called again in this process, with another stderr
        log.removeHandler(progress)
        log.setLevel(level)


def module_main(module, prog: str, argv=None) -> int:
    """`python -m cnnfpga.<module>`: the same subcommand without the `cnnfpga` word."""
    parser = ArgumentParser(prog=prog, description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return run_command(module.run, args)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = ArgumentParser(prog="cnnfpga", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"cnnfpga {__import__('cnnfpga').__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((word for word in argv if not word.startswith("-")), None)
    for name, (module_name, summary) in COMMANDS.items():
        sub = commands.add_parser(name, help=summary, formatter_class=argparse.RawDescriptionHelpFormatter)
        if name == chosen:
            module = importlib.import_module(module_name, __package__)
            sub.description = module.__doc__
            module.add_arguments(sub)
            sub.set_defaults(run=module.run)
    args = parser.parse_args(argv)
    return run_command(args.run, args)


if __name__ == "__main__":
    sys.exit(main())
