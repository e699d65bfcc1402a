"""Stage 05_analysis: tables, figures and the report from the tidy result rows."""
