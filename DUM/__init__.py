"""DUM: CDCN with a depth-uncertainty module, its data, trainer, tester and evaluator."""
