"""The paper-style figure of a results file."""
