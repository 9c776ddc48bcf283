from s3edit.cli import main

main()
