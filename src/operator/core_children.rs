//! What a `ScaledActionRunnerCore` becomes: the API server stack.
