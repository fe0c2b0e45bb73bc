"""Compare the anchor sizing modes (manual, kmeans, learned) on a config's training split.

    python tools/anchors.py --config CFG [--json FILE] [--output-dir DIR] [key=value ...]

Prints the metric table of ANCHORS.md (centred mBIoU; grid-aware mean best IoU, recall at 0.5 and
0.7, share of boxes below 0.3, anchors at IoU >= 0.7 per box; overall and by COCO size bucket) and
each mode's shapes per level. Writes DIR/anchors.json and DIR/anchors.png (default DIR:
<output.dir>/anchors); --json FILE writes the same {"manual", "kmeans", "learned"} dict to FILE.
key=value overrides change the config, e.g. data.min_size=[480] data.max_size=640.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detkit.anchors.report import anchor_report  # noqa: E402
from detkit.config import load_config  # noqa: E402
from detkit.errors import DetkitError  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config (default: the built-in defaults, synthetic data)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--output-dir", help="where anchors.json and anchors.png go (default <output.dir>/anchors)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        output_dir = args.output_dir or os.path.join(cfg.output.dir, "anchors")
        anchor_report(cfg, output_dir=output_dir, json_path=args.json)
    except DetkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
