//! What a `ScaledActionRunner` becomes: the runner StatefulSet and its KEDA ScaledObject.
