from resguardo.cli import main

main()
