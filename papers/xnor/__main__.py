from common.cli import main
from papers.xnor import DEFAULT_CONFIG

raise SystemExit(main("xnor", DEFAULT_CONFIG))
