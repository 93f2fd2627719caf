"""Who may do what, where: users, API tokens, dashboard sessions, roles scoped to sites."""
