pub mod resync;
