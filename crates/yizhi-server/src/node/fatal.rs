//! How the driver and the applier stop the member when it can no longer keep its promises.

/// A storage failure leaves the node unable to keep its promises: stop, never retry (fsyncgate).
pub(crate) fn fatal(what: &str) -> ! {
    tracing::error!("fatal: {what}; stopping the node");
    eprintln!("yizhi: fatal: {what}; stopping the node");
    std::process::exit(2)
}
