from common.cli import main
from papers.gupta import DEFAULT_CONFIG

raise SystemExit(main("gupta", DEFAULT_CONFIG))
