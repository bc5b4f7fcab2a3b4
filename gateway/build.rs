//! Unpacks the two Swagger UI files `/docs` serves from the release archive
//! the `utoipa-swagger-ui-vendored` crate carries, so the binary embeds them
//! (no CDN, nothing downloaded: the archive comes with the crate).

use std::{io::Read, path::PathBuf};

const FILES: [&str; 2] = ["swagger-ui-bundle.js", "swagger-ui.css"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let archive = std::io::Cursor::new(utoipa_swagger_ui_vendored::SWAGGER_UI_VENDORED);
    let mut archive = zip::ZipArchive::new(archive)?;
    for file in FILES {
        // The distribution is `swagger-ui-<version>/dist/<file>`.
        let name = archive
            .file_names()
            .filter_map(Result::ok)
            .find(|name| name.ends_with(&format!("/dist/{file}")) && name.matches('/').count() == 2)
            .ok_or_else(|| format!("{file} is not in the Swagger UI archive"))?
            .into_owned();
        let mut bytes = Vec::new();
        archive.by_name(&name)?.read_to_end(&mut bytes)?;
        std::fs::write(out.join(file), bytes)?;
    }
    println!("cargo:rerun-if-changed=build.rs");
    Ok(())
}
