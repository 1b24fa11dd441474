from sedamp.cli import main

main()
