"""Background worker: :func:`losslab.labelsets.segment.segment` on files, speaking JSON lines.

Run as a script by :class:`FetalParcellationLib.inference.ParcellationJob` (``PythonSlicer`` in Slicer,
``sys.executable`` in tests); it imports only :mod:`losslab`, never slicer or Qt::

    python segment_worker.py MODEL IMAGE OUTPUT [--mask M] [--uncertainty U] [--spacing S ...]
                            [--device D] [--stop-file F]

Protocol (:mod:`LossLabLib.jobs`): ``{"event": "progress", "fraction", "message"}`` before the model loads and
after each ensemble member; ``{"event": "result", ...}`` with :func:`segment`'s summary; on a stop request
(the stop file appears, or SIGTERM) ``{"event": "stopped"}`` and exit 0; on an error
``{"event": "error", "type", "message"}`` and exit 2 (bad input) or 1.

The segmentation itself is the core's ``segment()`` unchanged, so a job and ``losslab fetal segment`` give the
same labels. ``segment()`` has no progress callback: the worker wraps the ensemble-member loop (it iterates
through ``losslab.labelsets.segment.tqdm``) to report each member and to check for a stop between members.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path


class Stopped(Exception):
    """A stop was requested."""


def emit(event: str, **fields) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("image")
    parser.add_argument("output")
    parser.add_argument("--mask")
    parser.add_argument("--uncertainty")
    parser.add_argument("--spacing", type=float, nargs="+")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--stop-file")
    args = parser.parse_args(argv)
    stop_file = Path(args.stop_file) if args.stop_file else None
    stop = {"requested": False}

    def on_term(signum, frame):
        stop["requested"] = True

    signal.signal(signal.SIGTERM, on_term)

    def check_stop() -> None:
        if stop["requested"] or (stop_file is not None and stop_file.exists()):
            raise Stopped()

    from losslab.labelsets import segment as segment_module

    def members(iterable, desc=None, disable=None, **kwargs):
        items = list(iterable)
        for index, item in enumerate(items):
            check_stop()
            emit("progress", fraction=0.1 + 0.8 * index / len(items),
                 message=f"ensemble member {index + 1}/{len(items)}")  # fmt: skip
            yield item
        check_stop()
        emit("progress", fraction=0.9, message="resampling to the MRI's grid")

    segment_module.tqdm = members
    try:
        check_stop()
        emit("progress", fraction=0.0, message=f"loading model {args.model}")
        info = segment_module.segment(
            args.model,
            args.image,
            args.output,
            mask=args.mask,
            uncertainty=args.uncertainty,
            spacing=args.spacing,
            device=args.device,
            progress=True,
        )
    except Stopped:
        emit("stopped", message="stopped on request")
        return 0
    except (ValueError, FileNotFoundError) as exc:
        emit("error", type=type(exc).__name__, message=str(exc))
        return 2
    except Exception as exc:  # reported to the parent as an event; the traceback goes to stderr
        import traceback

        traceback.print_exc()
        emit("error", type=type(exc).__name__, message=str(exc))
        return 1
    emit("progress", fraction=1.0, message="done")
    emit("result", **{k: v for k, v in info.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
