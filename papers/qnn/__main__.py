from common.cli import main
from papers.qnn import DEFAULT_CONFIG

raise SystemExit(main("qnn", DEFAULT_CONFIG))
