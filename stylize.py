"""Entry point for stylisation: python stylize.py --help"""
from common.cli import run_cli
from stylization.main import main

if __name__ == "__main__":
    run_cli(main)
