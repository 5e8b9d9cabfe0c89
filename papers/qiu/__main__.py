from common.cli import main
from papers.qiu import DEFAULT_CONFIG

raise SystemExit(main("qiu", DEFAULT_CONFIG))
