"""Entry point for stylisation: python stylize.py --help"""
from stylization.main import main
from utils import run_cli

if __name__ == "__main__":
    run_cli(main)
