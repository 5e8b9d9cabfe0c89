from common.cli import main
from papers.moons import DEFAULT_CONFIG

raise SystemExit(main("moons", DEFAULT_CONFIG))
