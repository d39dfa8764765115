"""`python -m bert.sweep`: the ablation sweep's command, under the name the docs use; the code is
bert/ablations/sweep.py."""
from bert.ablations.sweep import main

if __name__ == "__main__":
    main()
