//! CUDA support that does not depend on the exported hooks: where a hook's real function
//! comes from and the wrapper slots for resolved pointers (`slots`), and the questions the
//! shim asks the driver about memory it saw handed out (`query`). The hooks themselves are
//! in `hooks/cuda/`.

pub mod query;
pub mod slots;
