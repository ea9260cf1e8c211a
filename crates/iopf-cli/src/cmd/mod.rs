//! One module per subcommand.

pub mod attach;
pub mod decode;
pub mod run;
pub mod serve;
