"""The paper's ablation tables as sweeps: the table schema (table), the planner and runner
(sweep, `python -m bert.sweep`), the results (results), the shared tasks and recipe (tasks) and
the proxy datasets (data, `python -m bert.ablation_data`)."""
