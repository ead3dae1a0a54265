//! reactor

use crate::settings::Settings;

/// Runs the server until SIGTERM/SIGINT or `shutdown`.
pub fn serve(settings: Settings) -> std::io::Result<()> {
    let _ = settings;
    Ok(())
}
