from common.cli import main
from papers.sung import DEFAULT_CONFIG

raise SystemExit(main("sung", DEFAULT_CONFIG))
