"""`python -m rd_pipeline.cli.known_answer`: one run of the known-answer experiment."""

from rd_pipeline.cli.known_answer import main

if __name__ == "__main__":
    raise SystemExit(main(prog="python -m rd_pipeline.cli.known_answer"))
