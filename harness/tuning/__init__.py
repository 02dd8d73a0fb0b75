"""Equal-budget hyper-parameter tuning with Optuna: studies (tune), their storage (storage), the read side (results), and the full audit that combines them (full_audit)."""
