fn main() {
    std::process::exit(chatctl::main());
}
