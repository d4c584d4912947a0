"""`warmstart loadtest`: an open-loop replay of a real request trace against a running warmstart."""
