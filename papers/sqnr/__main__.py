from common.cli import main
from papers.sqnr import DEFAULT_CONFIG

raise SystemExit(main("sqnr", DEFAULT_CONFIG))
