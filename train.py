"""Entry point for training: python train.py --help"""
from common.cli import run_cli
from train.main import main

if __name__ == "__main__":
    run_cli(main)
