"""Entry point for training: python train.py --help"""
from train.main import main
from utils import run_cli

if __name__ == "__main__":
    run_cli(main)
