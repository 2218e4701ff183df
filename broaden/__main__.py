from broaden.cli import main

main()
