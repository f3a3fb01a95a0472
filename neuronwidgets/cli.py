"""The ``neuronwidgets`` command: rank the units of a layer from the shell (the demo model by default)."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from neuronwidgets import demo
from neuronwidgets.methods import methods
from neuronwidgets.probe import Probe
from neuronwidgets.ranking import Ranking


def _load_object(spec: str, what: str) -> Any:
    """``module:callable`` (called with no arguments) or a file saved with ``torch.save``."""
    if ":" in spec and not Path(spec).exists():
        module_name, _, attr = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise SystemExit(f"error: cannot load {what} {spec!r}: {err}") from err
        return factory() if callable(factory) else factory
    path = Path(spec)
    if not path.exists():
        raise SystemExit(f"error: {what} {spec!r} is neither an existing file nor 'module:callable'")
    # A pickled model is code: only load files you trust (your own checkpoints).
    return torch.load(path, map_location="cpu", weights_only=False)


def _first(data: Any, n: int | None) -> Any:
    if n is None:
        return data
    if n < 1:
        raise SystemExit("error: --images must be at least 1")
    if isinstance(data, torch.Tensor):
        return data[:n]
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return data[0][:n], data[1][:n]
    if isinstance(data, Dataset):
        subset = Subset(data, range(min(n, len(data))))  # type: ignore[arg-type]
        subset.classes = getattr(data, "classes", None)  # type: ignore[attr-defined]
        return subset
    raise SystemExit(f"error: --images cannot subsample data of type {type(data).__name__}")


def _table(ranking: Ranking, probe: Probe, top: int, model_name: str) -> str:
    meta = ranking.meta
    target = "" if ranking.target is None else f", class {probe.classes[ranking.target]!r}"
    lines = [
        f"{ranking.method} ranking of {probe.units} units in layer {ranking.layer!r} "
        f"({meta.get('layer_type', '?')}) of {model_name}{target}",
        f"{meta.get('images')} images, {meta.get('seconds', 0):.2f} s"
        + (f", engine: {meta['engine']}" if "engine" in meta else "")
        + (f", base accuracy {meta['base_accuracy']:.4f}" if "base_accuracy" in meta else ""),
        "",
        f"{'rank':>4}  {'unit':>5}  {'score':>12}",
    ]
    for position, (unit, score) in enumerate(ranking.top(top), start=1):
        lines.append(f"{position:>4}  {unit:>5}  {score:>12.6g}")
    if top < ranking.units:
        lines.append(f"... {ranking.units - top} more (use --top or --format csv)")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neuronwidgets", description="Rank the neurons (channels) of a CNN layer.")
    commands = parser.add_subparsers(dest="command")
    rank = commands.add_parser("rank", help="rank the units of a layer (the default command)")
    layers = commands.add_parser("layers", help="list the inspectable layers of a model")
    commands.add_parser("methods", help="list the ranking methods")
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
            raise SystemExit(f"error: --model {args.model!r} gave a {type(model).__name__}, not a torch.nn.Module")
        if args.data is None:
            raise SystemExit("error: --data is required with a model other than the demo")
        data = None
        name = type(model).__name__
    if args.data is not None:
        data = _load_object(args.data, "data")
    try:
        return Probe(model, _first(data, args.images), layer=layer), name
    except (ValueError, TypeError) as err:
        raise SystemExit(f"error: {err}") from err


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv if argv is not None else sys.argv[1:] or ["rank"])
    if args.command is None:
        args = _parser().parse_args(["rank", *(argv or [])])
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
    try:
        ranking = probe.rank(args.method, **options)
    except (ValueError, TypeError) as err:
        raise SystemExit(f"error: {err}") from err
    if args.format == "csv":
        sys.stdout.write(ranking.to_csv())
    elif args.format == "json":
        print(ranking.to_json(indent=2))
    else:
        print(_table(ranking, probe, max(1, args.top), name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
