"""Commands for a recorded model: ``serve``, ``compress`` and ``export``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from sweeper.cli._args import apply_trust, model_args
from sweeper.cli._base import fail


def cmd_serve(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="sweeper serve",
        description="Serve a registered model over HTTP with MLflow's scoring server (/ping, /health, "
        "/version, /invocations). Send raw inputs, one row of numbers per sample: "
        "{\"inputs\": [[...]]}. Ctrl-C stops it.",
    )
    model_args(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to bind (default 127.0.0.1; anything else exposes the model to your network)")
    parser.add_argument("--port", type=int, default=5001, help="port (default 5001)")
    parser.add_argument("--max-request-mb", type=float, default=None,
                        help="largest request body accepted, in MB; larger ones are answered 413 "
                             "(default $SWEEPER_SERVE_MAX_REQUEST_MB, else 5)")
    args = parser.parse_args(argv)
    apply_trust(args)
    from sweeper.serving.serve import max_request_mb, serve

    return serve(args.target, args.tracking_uri, args.host, args.port, max_request_mb(args.max_request_mb))


def cmd_compress(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="sweeper compress",
        description="Make smaller or faster variants of a recorded model on CPU (dynamic int8 "
        "quantisation, magnitude pruning), measure each on the test split, log the table to the "
        "model's run, and register the smallest variant within the tolerance.",
    )
    model_args(parser)
    parser.add_argument("--sparsities", default="0.5,0.8",
                        help="magnitude-pruning sparsities to try (default 0.5,0.8)")
    parser.add_argument("--tolerance", type=float, default=0.01,
                        help="largest loss of the test metric a variant may have to be registered (default 0.01)")
    parser.add_argument("--max-slowdown", type=float, default=2.0,
                        help="largest latency a variant may have, as a multiple of float32's at batch 1 "
                             "and at batch 64, to be registered (default 2)")
    parser.add_argument("--repeats", type=int, default=20, help="latency repeats (median; default 20)")
    parser.add_argument("--no-register", action="store_true", help="measure only")
    args = parser.parse_args(argv)
    apply_trust(args)
    if not args.max_slowdown >= 1:
        return fail(f"--max-slowdown {args.max_slowdown:g}: give a multiple of float32's latency, 1 or more, e.g. 2")
    try:
        sparsities = [float(s) for s in args.sparsities.split(",") if s.strip()]
    except ValueError:
        return fail(f"--sparsities {args.sparsities!r}: give numbers between 0 and 1, e.g. 0.5,0.8")
    if not all(0 < s < 1 for s in sparsities):
        return fail(f"--sparsities {args.sparsities!r}: each must be between 0 and 1 (exclusive)")
    from sweeper.serving.compress import compress_recorded

    compress_recorded(args.target, args.tracking_uri, args.experiment, sparsities, args.tolerance,
                      max(1, args.repeats), register=not args.no_register, max_slowdown=args.max_slowdown)
    return 0


def cmd_export(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="sweeper export",
        description="Export a recorded model to TorchScript and ONNX (normalisation included: raw "
        "inputs in), check each against the PyTorch model on the test split, and log them as "
        "artifacts of the model's run. ONNX needs `pip install 'sweeper[export]'`.",
    )
    model_args(parser)
    parser.add_argument("--format", default="torchscript,onnx", help="torchscript, onnx or both (default)")
    parser.add_argument("--out", default=None, help="folder for the files (default outputs/export/<run id>)")
    args = parser.parse_args(argv)
    apply_trust(args)
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    unknown = sorted(set(formats) - {"torchscript", "onnx"})
    if unknown or not formats:
        return fail(f"--format {args.format!r}: choose torchscript, onnx or torchscript,onnx")
    from sweeper.serving.export import export_recorded

    export_recorded(args.target, args.tracking_uri, args.experiment, formats, args.out)
    return 0
