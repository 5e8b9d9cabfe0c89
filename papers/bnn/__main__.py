from common.cli import main
from papers.bnn import DEFAULT_CONFIG

raise SystemExit(main("bnn", DEFAULT_CONFIG))
