"""`python -m bert.ablation_data`: the ablation proxy sets' command, under the name the docs use;
the code is bert/ablations/data.py."""
from bert.ablations.data import main

if __name__ == "__main__":
    main()
