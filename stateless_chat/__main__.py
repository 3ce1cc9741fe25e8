"""``python -m stateless_chat``."""

from stateless_chat.cli import main

main()
