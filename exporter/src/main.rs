fn main() {
    println!("astrolabe");
}
