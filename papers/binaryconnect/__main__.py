from common.cli import main
from papers.binaryconnect import DEFAULT_CONFIG

raise SystemExit(main("binaryconnect", DEFAULT_CONFIG))
