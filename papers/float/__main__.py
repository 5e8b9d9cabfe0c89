from common.cli import main
from papers.float import DEFAULT_CONFIG

raise SystemExit(main("float", DEFAULT_CONFIG))
