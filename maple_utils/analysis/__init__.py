"""Stage 06_analysis: tables, figures and the report from the tidy result rows."""
