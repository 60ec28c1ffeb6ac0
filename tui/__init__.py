"""The lit-imgcls terminal UI (Textual). It reads run folders and never is imported by the engine."""
