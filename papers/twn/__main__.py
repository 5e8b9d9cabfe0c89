from common.cli import main
from papers.twn import DEFAULT_CONFIG

raise SystemExit(main("twn", DEFAULT_CONFIG))
