pub fn run(_seed: u64) -> anyhow::Result<()> {
    Ok(())
}
