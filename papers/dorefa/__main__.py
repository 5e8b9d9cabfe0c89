from common.cli import main
from papers.dorefa import DEFAULT_CONFIG

raise SystemExit(main("dorefa", DEFAULT_CONFIG))
