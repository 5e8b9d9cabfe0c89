from common.cli import main
from papers.ristretto import DEFAULT_CONFIG

raise SystemExit(main("ristretto", DEFAULT_CONFIG))
