from common.cli import main
from papers.fxptrain import DEFAULT_CONFIG

raise SystemExit(main("fxptrain", DEFAULT_CONFIG))
