"""The ``neuronwidgets`` command: rank the units of a layer from the shell (the demo model by default).

A problem with the input (a missing or unreadable file, a factory that raises, bad data, a bad option) is one
line ``error: ...`` on stderr and exit code 2, without a traceback; ``--debug`` shows the traceback instead.

Under ``torchrun --nproc-per-node N -m neuronwidgets rank ...`` (``WORLD_SIZE`` > 1 in the environment) the
command joins the process group torchrun describes (gloo: models load on the CPU), every rank ranks its shard of
the data, and rank 0 alone prints, the output of one process.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import operator
import os
import sys
import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from neuronwidgets import demo
from neuronwidgets.methods import methods
from neuronwidgets.methods import spec as method_spec
from neuronwidgets.probe import Probe
from neuronwidgets.ranking import Ranking

BARRIER_TIMEOUT = timedelta(seconds=30)  # the ranks' last meeting under torchrun, before they leave the group


class CliError(Exception):
    """A problem with the command's input: reported as one line ``error: ...`` and exit code 2."""


def _cause(err: BaseException) -> str:
    """An exception as one line, ``Type: message``, for the cause part of an error line."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _load_object(spec: str, what: str) -> Any:
    """``module:callable`` (called with no arguments) or a file saved with ``torch.save``."""
    if ":" in spec and not Path(spec).exists():
        return _from_factory(spec, what)
    path = Path(spec)
    if not path.is_file():
        raise CliError(f"{what} {spec!r} is neither an existing file nor 'module:callable'")
    return _from_file(path, what)


def _from_factory(spec: str, what: str) -> Any:
    """The object ``module:attr`` names, called with no arguments if it is callable."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr or ":" in attr:
        raise CliError(f"{what} {spec!r} is not 'module:callable' (e.g. 'mypackage.models:make_model')")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # not found, or the module's own code failed
        raise CliError(f"cannot import module {module_name!r} for {what} {spec!r} ({_cause(err)})") from err
    try:
        factory = operator.attrgetter(attr)(module)
    except AttributeError as err:
        raise CliError(f"module {module_name!r} has no attribute {attr!r} (for {what} {spec!r})") from err
    if not callable(factory):
        return factory
    try:
        return factory()
    except Exception as err:
        raise CliError(f"the {what} factory {spec!r} raised {_cause(err)}") from err


def _from_file(path: Path, what: str) -> Any:
    """An object saved by ``torch.save``; a pickled model is code, so only load files you trust."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (ImportError, AttributeError) as err:  # the pickle names a module or class not importable here
        raise CliError(
            f"cannot load {what} {str(path)!r}: it was pickled with a class that cannot be imported here "
            f"({_cause(err)}). Make the module that defines it importable (run from its folder or add it to "
            "PYTHONPATH), or save model.state_dict() and pass a 'module:factory' that builds and loads the model"
        ) from err
    except Exception as err:
        raise CliError(
            f"cannot load {what} {str(path)!r} with torch.load ({_cause(err)}): is it a file written by torch.save?"
        ) from err


def _first(data: Any, n: int | None) -> Any:
    if n is None:
        return data
    if n < 1:
        raise CliError("--images must be at least 1")
    if isinstance(data, torch.Tensor):
        return data[:n]
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return data[0][:n], data[1][:n]
    if isinstance(data, Dataset):
        subset = Subset(data, range(min(n, len(data))))  # type: ignore[arg-type]
        subset.classes = getattr(data, "classes", None)  # type: ignore[attr-defined]
        return subset
    raise CliError(f"--images cannot subsample data of type {type(data).__name__}")


def _table(ranking: Ranking, probe: Probe, top: int, model_name: str) -> str:
    """The top rows with what a score is (and its unit), and the tie-break where the method has one: accuracy
    moves in steps of one image, so several units often share a score and the tie-break orders them."""
    meta = ranking.meta
    method = method_spec(ranking.method)
    target = "" if ranking.target is None else f", class {probe.classes[ranking.target]!r}"
    images = meta.get("images")
    lines = [
        f"{ranking.method} ranking of {probe.units} units in layer {ranking.layer!r} "
        f"({meta.get('layer_type', '?')}) of {model_name}{target}",
        f"{images} images, {meta.get('seconds', 0):.2f} s"
        + (f", engine: {meta['engine']}" if "engine" in meta else "")
        + (f", base accuracy {meta['base_accuracy']:.4f}" if "base_accuracy" in meta else ""),
        f"score: {method.description.split(';')[0].lower()}",
    ]
    scale = 100.0 if method.percent else 1.0
    if method.percent and images:
        lines[-1] += f", in percentage points (one image is {100 / images:.4g} pp)"
    tiebreak = method.tiebreak if ranking.tiebreak is not None else None
    if tiebreak:
        lines[-1] += f"; equal scores are ordered by the {tiebreak}"
    width = max(12, len(method.score))
    heading = f"{'rank':>4}  {'unit':>5}  {method.score:>{width}}"
    lines += ["", heading + (f"  {tiebreak:>14}" if tiebreak else "")]
    for position, (unit, score) in enumerate(ranking.top(top), start=1):
        row = f"{position:>4}  {unit:>5}  {scale * score:>{width}.6g}"
        if tiebreak:
            row += f"  {float(ranking.tiebreak[unit]):>14.6g}"
        lines.append(row)
    if top < ranking.units:
        lines.append(f"... {ranking.units - top} more (use --top or --format csv)")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neuronwidgets", description="Rank the neurons (channels) of a CNN layer.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command")
    rank = commands.add_parser("rank", help="rank the units of a layer (the default command)")
    layers = commands.add_parser("layers", help="list the inspectable layers of a model")
    listing = commands.add_parser("methods", help="list the ranking methods")
    for sub in (rank, layers, listing):  # SUPPRESS: a subcommand's default must not undo 'neuronwidgets --debug'
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show an error's traceback")
    for sub in (rank, layers):
        sub.add_argument("--model", default="demo", help="'demo', 'module:factory' or a file saved by torch.save")
        sub.add_argument("--data", help="'module:factory' or a torch.save file: a Dataset or (images, labels)")
        sub.add_argument("--images", type=int, help="use only the first N images")
    rank.add_argument("--layer", help="layer name (see the 'layers' command); default: a late activation")
    rank.add_argument("--method", default="ablation", help="ranking method (see the 'methods' command)")
    rank.add_argument("--target", type=int, help="class index for the class-specific variant")
    rank.add_argument("--top", type=int, default=15, help="rows in the table (default 15)")
    rank.add_argument("--format", choices=("table", "csv", "json"), default="table")
    return parser


def _probe(args: argparse.Namespace, layer: str | None = None) -> tuple[Probe, str]:
    if args.model == "demo":
        model, data = demo.load()
        name = "the demo digits CNN"
    else:
        model = _load_object(args.model, "model")
        if not isinstance(model, torch.nn.Module):
            raise CliError(f"--model {args.model!r} gave a {type(model).__name__}, not a torch.nn.Module")
        if args.data is None:
            raise CliError("--data is required with a model other than the demo")
        data = None
        name = type(model).__name__
    if args.data is not None:
        data = _load_object(args.data, "data")
    try:
        return Probe(model, _first(data, args.images), layer=layer), name
    except (ValueError, TypeError) as err:
        raise CliError(str(err)) from err


def main(argv: list[str] | None = None) -> int:
    """Run the command; 0 on success, 2 (with one line ``error: ...`` on stderr) for bad input."""
    args = _parser().parse_args(argv if argv is not None else sys.argv[1:] or ["rank"])
    if args.command is None:
        args = _parser().parse_args(["rank", *(argv or [])])
    with _torchrun_group() as rank:
        try:
            with _quiet_unless(rank == 0):
                return _run(args, progress=None if rank == 0 else False)
        except Exception as err:
            if getattr(args, "debug", False):
                raise
            if rank == 0:  # another rank's failure reaches rank 0 as a DistributedError naming it
                print(f"error: {_message(err)}", file=sys.stderr)
            return 2


@contextlib.contextmanager
def _torchrun_group() -> Iterator[int]:
    """Join the process group that torchrun's environment describes (``WORLD_SIZE`` > 1) for the command, and
    leave it after; this process's rank (0 without torchrun, or where a group is already initialised)."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        yield dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        return
    dist.init_process_group("gloo")  # env://: torchrun sets MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE
    try:
        yield dist.get_rank()
    finally:
        # every rank done before any closes its connections: a rank whose peer hung up while gloo still
        # talked to it aborted ("terminate called without an active exception"); bounded, so that a group
        # with a dead rank does not hold the others for the group's whole timeout
        with contextlib.suppress(RuntimeError):
            dist.monitored_barrier(timeout=BARRIER_TIMEOUT)
        dist.destroy_process_group()


@contextlib.contextmanager
def _quiet_unless(speaking: bool) -> Iterator[None]:
    """Standard output and warnings as they are on the rank that prints, discarded on the others."""
    if speaking:
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _message(err: Exception) -> str:
    """The error line: our own and the library's input errors as they are, anything else with its type."""
    if isinstance(err, (CliError, ValueError, TypeError)):
        return " ".join(str(err).split())
    return f"{_cause(err)} (run with --debug for the traceback)"


def _run(args: argparse.Namespace, progress: bool | None = None) -> int:
    if args.command == "methods":
        for name, description in methods().items():
            print(f"{name:<14} {description}")
        return 0
    if args.command == "layers":
        probe, _ = _probe(args)
        for layer in probe.layers:
            info = probe.layer_info(layer)
            print(f"{layer:<30} {info.type:<20} {info.units:>5} units  output {info.shape}")
        return 0
    probe, name = _probe(args, args.layer)
    options = {} if args.target is None else {"target": args.target}
    ranking = probe.rank(args.method, progress=progress, **options)
    if args.format == "csv":
        sys.stdout.write(ranking.to_csv())
    elif args.format == "json":
        print(ranking.to_json(indent=2))
    else:
        print(_table(ranking, probe, max(1, args.top), name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
