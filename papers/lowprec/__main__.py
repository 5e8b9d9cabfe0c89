from common.cli import main
from papers.lowprec import DEFAULT_CONFIG

raise SystemExit(main("lowprec", DEFAULT_CONFIG))
