use memcached::settings::Settings;

fn main() {
    let settings = Settings::default();
    if let Err(e) = memcached::reactor::serve(settings) {
        eprintln!("failed to serve: {e}");
        std::process::exit(71);
    }
}
